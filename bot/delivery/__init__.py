"""The delivery logic, pure and without I/O: the deploy card and its phases, the events it reads,
the access policy, the `/erp` parser, scan verdicts, log lines.

Nothing here talks to Slack, AWS or Kubernetes (tests/test_architecture.py checks the imports):
it is unit-testable without servers, and the adapters and handlers build on it.
"""
