output "bot_role_arn" {
  description = "serviceAccount.roleArn for charts/erp-chatops"
  value       = aws_iam_role.bot.arn
}

output "progress_queue_url" {
  description = "progress_queue_url in the bot's config"
  value       = aws_sqs_queue.progress.url
}

output "events_queue_url" {
  description = "events_queue_url in the bot's config"
  value       = aws_sqs_queue.events.url
}

output "audit_table" {
  value = aws_dynamodb_table.audit.name
}

output "state_table" {
  value = aws_dynamodb_table.state.name
}

output "pipeline" {
  value = aws_codepipeline.erp.name
}

output "slack_secret_id" {
  value = aws_secretsmanager_secret.slack.name
}
