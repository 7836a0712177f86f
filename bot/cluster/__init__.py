"""The cluster adapter: the Kubernetes client (`kube`) and the helm CLI (`helm`)."""
