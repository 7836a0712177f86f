"""What the buildspec runs in CodeBuild: `erp-chatops ci <step>` (`build_steps`) and
`erp-chatops notify` (`notify`). Plain synchronous code, run once per build; no Bolt, no server."""
