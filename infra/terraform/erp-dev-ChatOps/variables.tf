variable "region" {
  type    = string
  default = "ap-northeast-2"
}

variable "account_id" {
  type    = string
  default = "806332783810"
}

variable "environment" {
  description = "The module's own environment name, used in resource names (erp-dev-ChatOps)."
  type        = string
  default     = "dev"
}

variable "services" {
  description = "The ERP services the pipeline builds and deploys."
  type        = list(string)
  default     = ["employee", "approval-request", "approval-processing", "notification"]
}

variable "github_connection_arn" {
  description = "CodeConnections (CodeStar) connection to GitHub."
  type        = string
}

variable "github_repository" {
  description = "owner/name of the ERP repository."
  type        = string
  default     = "erp-team/erp-platform"
}

variable "eks_oidc_provider_arn" {
  description = "The EKS cluster's IAM OIDC provider, for the bot's service account (IRSA)."
  type        = string
}

variable "eks_oidc_provider_url" {
  description = "The provider's URL without https://, e.g. oidc.eks.ap-northeast-2.amazonaws.com/id/EXAMPLE."
  type        = string
}

variable "bot_namespace" {
  type    = string
  default = "erp-chatops"
}

variable "bot_service_account" {
  type    = string
  default = "erp-chatops"
}

variable "alarm_environments" {
  description = "The environments whose services get an error alarm (the bot posts it in the deploy's thread)."
  type        = list(string)
  default     = ["dev", "prod"]
}

variable "error_alarm_threshold" {
  description = "ERROR log lines per minute that put a service's alarm in ALARM."
  type        = number
  default     = 5
}
