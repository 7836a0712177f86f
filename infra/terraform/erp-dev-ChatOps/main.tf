# What the erp-chatops bot relies on in AWS: one V2 pipeline for all services, its CodeBuild
# projects, the events it reads (EventBridge -> SQS, with a dead-letter queue), its state table,
# its Slack secret, and the IAM role of its service account with exactly the calls it makes.

locals {
  name          = "erp-${var.environment}-ChatOps"
  pipeline_name = "erp-pipeline"
  pipeline_arn  = "arn:aws:codepipeline:${var.region}:${var.account_id}:${local.pipeline_name}"
  repositories  = [for s in var.services : "erp/${s}-service"]
  # Every CodeBuild action learns which deploy it serves (the bot finds the card by these).
  pipeline_env_vars = [
    { name = "PIPELINE_EXECUTION_ID", value = "#{codepipeline.PipelineExecutionId}", type = "PLAINTEXT" },
    { name = "SERVICE", value = "#{variables.SERVICE}", type = "PLAINTEXT" },
    { name = "ENVIRONMENT", value = "#{variables.ENVIRONMENT}", type = "PLAINTEXT" },
    { name = "REQUESTED_BY", value = "#{variables.REQUESTED_BY}", type = "PLAINTEXT" },
    { name = "SLACK_CHANNEL", value = "#{variables.SLACK_CHANNEL}", type = "PLAINTEXT" },
    { name = "SLACK_THREAD_TS", value = "#{variables.SLACK_THREAD_TS}", type = "PLAINTEXT" },
  ]
}

# --- encryption ---------------------------------------------------------------------------

data "aws_iam_policy_document" "kms" {
  # In a key policy "*" is the key itself (AWS's documented form), and the account root is its administrator:
  #checkov:skip=CKV_AWS_111:a key policy's resource is this key only
  #checkov:skip=CKV_AWS_356:a key policy's resource is this key only
  #checkov:skip=CKV_AWS_109:the account administers its own key; use is granted per role
  statement {
    sid       = "AccountAdministersTheKey" # the roles below get use of it through their own policies
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:aws:iam::${var.account_id}:root"]
    }
  }
}

resource "aws_kms_key" "chatops" {
  description         = "erp-chatops: state table, Slack secret, pipeline artifacts and builds"
  enable_key_rotation = true
  policy              = data.aws_iam_policy_document.kms.json
}

resource "aws_kms_alias" "chatops" {
  name          = "alias/${local.name}"
  target_key_id = aws_kms_key.chatops.key_id
}

# --- state and events ---------------------------------------------------------------------

# The audit trail, append-only: no role may update or delete in it (iam.tf denies it to the bot and to
# CodeBuild), the bot writes each record only if new and seals it (README "Security").
resource "aws_dynamodb_table" "audit" {
  name                        = "erp-chatops-state-audit"
  billing_mode                = "PAY_PER_REQUEST"
  hash_key                    = "pk"
  range_key                   = "sk"
  deletion_protection_enabled = true

  attribute {
    name = "pk"
    type = "S"
  }
  attribute {
    name = "sk"
    type = "S"
  }
  ttl {
    attribute_name = "ttl"
    enabled        = true
  }
  point_in_time_recovery {
    enabled = true
  }
  server_side_encryption {
    enabled     = true
    kms_key_arn = aws_kms_key.chatops.arn
  }
}

resource "aws_dynamodb_table" "state" {
  name         = "erp-chatops-state"
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "pk"
  range_key    = "sk"

  attribute {
    name = "pk"
    type = "S"
  }
  attribute {
    name = "sk"
    type = "S"
  }
  ttl {
    attribute_name = "ttl"
    enabled        = true
  }
  point_in_time_recovery {
    enabled = true
  }
  server_side_encryption {
    enabled     = true
    kms_key_arn = aws_kms_key.chatops.arn
  }
}

resource "aws_sqs_queue" "events_dlq" {
  name                      = "erp-chatops-events-dlq"
  message_retention_seconds = 1209600 # 14 days to look at what could not be handled
  sqs_managed_sse_enabled   = true
}

resource "aws_sqs_queue" "events" {
  name                       = "erp-chatops-events"
  visibility_timeout_seconds = 30
  receive_wait_time_seconds  = 5
  sqs_managed_sse_enabled    = true
  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.events_dlq.arn
    maxReceiveCount     = 12 # bot/event_consumer.py RECEIVES_BEFORE_DEAD_LETTER: outages back off, poison goes fast
  })
}

# The buildspec's progress lines, on a queue of their own: CI may send here and nowhere else the bot reads,
# so a build can add a line to its card's thread and never pass for an AWS event (the events queue takes
# EventBridge's rules only, with an explicit deny for every other sender).
resource "aws_sqs_queue" "progress" {
  name                       = "erp-chatops-progress"
  visibility_timeout_seconds = 30
  receive_wait_time_seconds  = 5
  message_retention_seconds  = 86400 # a line a day old helps nobody
  sqs_managed_sse_enabled    = true
  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.events_dlq.arn
    maxReceiveCount     = 12
  })
}

resource "aws_cloudwatch_event_rule" "codepipeline" {
  name        = "erp-chatops-codepipeline"
  description = "Execution, stage and action state changes of the ERP pipeline"
  event_pattern = jsonencode({
    source      = ["aws.codepipeline"]
    resources   = [local.pipeline_arn]
    detail-type = ["CodePipeline Pipeline Execution State Change", "CodePipeline Stage Execution State Change", "CodePipeline Action Execution State Change"]
  })
}

resource "aws_cloudwatch_event_rule" "codebuild" {
  name        = "erp-chatops-codebuild"
  description = "Build state and phase changes of the ERP build and deploy projects"
  event_pattern = jsonencode({
    source      = ["aws.codebuild"]
    detail-type = ["CodeBuild Build State Change", "CodeBuild Build Phase Change"]
    detail      = { project-name = [aws_codebuild_project.build.name, aws_codebuild_project.deploy.name] }
  })
}

resource "aws_cloudwatch_event_rule" "scans" {
  name        = "erp-chatops-image-scans"
  description = "ECR basic and Inspector enhanced scans of the ERP images"
  event_pattern = jsonencode({
    source      = ["aws.ecr", "aws.inspector2"]
    detail-type = ["ECR Image Scan", "Inspector2 Scan"]
    detail = { repository-name = concat(local.repositories,
    [for r in local.repositories : "arn:aws:ecr:${var.region}:${var.account_id}:repository/${r}"]) }
  })
}

# --- errors after a deploy: a metric filter and an alarm per service and environment ------------------

locals {
  # "prod-employee" -> {service, environment}: the alarm's name says both (the bot reads them from it)
  service_environments = { for pair in setproduct(var.services, var.alarm_environments) :
  "${pair[1]}-${pair[0]}" => { service = pair[0], environment = pair[1] } }
}

resource "aws_cloudwatch_log_metric_filter" "errors" {
  for_each       = local.service_environments
  name           = "erp-${each.key}-errors"
  log_group_name = "/erp/${each.value.environment}/${each.value.service}-service"
  pattern        = "ERROR" # the services' Spring Boot lines carry their level as a word
  metric_transformation {
    name          = "${each.value.service}-errors"
    namespace     = "ERP/${each.value.environment}"
    value         = "1"
    default_value = "0"
  }
}

resource "aws_cloudwatch_metric_alarm" "errors" {
  for_each            = local.service_environments
  alarm_name          = "erp-${each.key}-errors" # erp-<environment>-<service>-errors
  alarm_description   = "ERROR lines of ${each.value.service} in ${each.value.environment}: erp-chatops posts it in the last deploy's thread"
  namespace           = "ERP/${each.value.environment}"
  metric_name         = "${each.value.service}-errors"
  statistic           = "Sum"
  period              = 60
  evaluation_periods  = 1
  threshold           = var.error_alarm_threshold
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
}

resource "aws_cloudwatch_event_rule" "alarms" {
  name        = "erp-chatops-alarms"
  description = "State changes of the ERP services' error alarms"
  event_pattern = jsonencode({
    source      = ["aws.cloudwatch"]
    detail-type = ["CloudWatch Alarm State Change"]
    resources   = [for a in aws_cloudwatch_metric_alarm.errors : a.arn]
  })
}

resource "aws_cloudwatch_event_target" "to_queue" {
  for_each = {
    codepipeline = aws_cloudwatch_event_rule.codepipeline.name
    codebuild    = aws_cloudwatch_event_rule.codebuild.name
    scans        = aws_cloudwatch_event_rule.scans.name
    alarms       = aws_cloudwatch_event_rule.alarms.name
  }
  rule = each.value
  arn  = aws_sqs_queue.events.arn
}

data "aws_iam_policy_document" "events_to_queue" {
  statement {
    sid       = "EventBridgeRulesOnly"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.events.arn]
    principals {
      type        = "Service"
      identifiers = ["events.amazonaws.com"]
    }
    condition {
      test     = "ArnEquals"
      variable = "aws:SourceArn"
      values = [aws_cloudwatch_event_rule.codepipeline.arn, aws_cloudwatch_event_rule.codebuild.arn,
      aws_cloudwatch_event_rule.scans.arn, aws_cloudwatch_event_rule.alarms.arn]
    }
  }
  statement {
    sid       = "NobodyElseSends" # an explicit deny beats any identity policy in the account (CI's included)
    effect    = "Deny"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.events.arn]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "ArnNotEquals" # also true when there is no source ARN (any role or user)
      variable = "aws:SourceArn"
      values = [aws_cloudwatch_event_rule.codepipeline.arn, aws_cloudwatch_event_rule.codebuild.arn,
      aws_cloudwatch_event_rule.scans.arn, aws_cloudwatch_event_rule.alarms.arn]
    }
  }
}

resource "aws_sqs_queue_policy" "events" {
  queue_url = aws_sqs_queue.events.id
  policy    = data.aws_iam_policy_document.events_to_queue.json
}

resource "aws_cloudwatch_metric_alarm" "dead_letters" {
  alarm_name          = "erp-chatops-dead-letters"
  alarm_description   = "Pipeline events the bot could not handle (see its logs for the reason)"
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = aws_sqs_queue.events_dlq.name }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
}

# --- Slack ----------------------------------------------------------------------------------

# The value is set once, outside Terraform (no secret in state or in git):
#   aws secretsmanager put-secret-value --secret-id erp-chatops/slack \
#     --secret-string '{"SLACK_BOT_TOKEN":"...","SLACK_SIGNING_SECRET":"..."}'
resource "aws_secretsmanager_secret" "slack" {
  #checkov:skip=CKV2_AWS_57:Slack issues the bot token and signing secret; they are rotated in Slack's app settings, not by a Lambda
  name        = "erp-chatops/slack"
  description = "erp-chatops Slack app: SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET"
  kms_key_id  = aws_kms_key.chatops.arn
}

# --- the pipeline ---------------------------------------------------------------------------

resource "aws_s3_bucket" "artifacts" {
  #checkov:skip=CKV_AWS_18:pipeline artifacts are transient; CloudTrail records who touches them
  #checkov:skip=CKV2_AWS_62:nothing consumes events from the artifact bucket
  #checkov:skip=CKV_AWS_144:artifacts are rebuilt from git; a second region adds cost, not safety
  bucket = "erp-${var.environment}-pipeline-artifacts"
}

resource "aws_s3_bucket_public_access_block" "artifacts" {
  bucket                  = aws_s3_bucket.artifacts.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "artifacts" {
  bucket = aws_s3_bucket.artifacts.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "artifacts" {
  bucket = aws_s3_bucket.artifacts.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.chatops.arn
    }
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "artifacts" {
  bucket = aws_s3_bucket.artifacts.id
  rule {
    id     = "expire-old-artifacts"
    status = "Enabled"
    filter {
      prefix = "${substr(local.pipeline_name, 0, 20)}/" # CodePipeline keeps artifacts under the pipeline's name
    }
    expiration {
      days = 30
    }
    noncurrent_version_expiration {
      noncurrent_days = 7
    }
  }
  rule {
    # tools/ (scripts/publish-ci-tools.sh) never expires: every build on a cold cache downloads it
    id     = "tools-keep-one-old-version"
    status = "Enabled"
    filter {
      prefix = "tools/"
    }
    noncurrent_version_expiration {
      noncurrent_days = 30
    }
  }
  rule {
    id     = "abort-incomplete-uploads"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }
}

resource "aws_codebuild_project" "build" {
  #checkov:skip=CKV_AWS_316:docker build needs privileged mode; only this project has it, not erp-deploy
  name          = "erp-build"
  description   = "Build changed service images, push to ECR, scan, stop on CRITICAL (buildspec.yml)"
  service_role   = aws_iam_role.build.arn
  build_timeout  = 60
  encryption_key = aws_kms_key.chatops.arn

  source {
    type      = "CODEPIPELINE"
    buildspec = "buildspec.yml"
  }
  artifacts {
    type = "CODEPIPELINE"
  }
  cache { # the buildspec's verified erp-chatops and helm (cache.paths), reused by the next build on the host
    type  = "LOCAL"
    modes = ["LOCAL_CUSTOM_CACHE"]
  }
  environment {
    compute_type    = "BUILD_GENERAL1_MEDIUM"
    image           = "aws/codebuild/standard:7.0"
    type            = "LINUX_CONTAINER"
    privileged_mode = true # docker build

    environment_variable {
      name  = "ECR_REPOSITORY"
      value = "/erp/${var.environment}/ecr/repository"
      type  = "PARAMETER_STORE"
    }
    environment_variable {
      name  = "EKS_CLUSTER_NAME"
      value = "/erp/${var.environment}/eks/cluster-name"
      type  = "PARAMETER_STORE"
    }
    environment_variable {
      name  = "HELM_VERSION"
      value = "/erp/${var.environment}/helm/version"
      type  = "PARAMETER_STORE"
    }
    environment_variable { # progress lines go to the bot's progress queue: CI holds no Slack credential
      name  = "PROGRESS_QUEUE_URL"
      value = aws_sqs_queue.progress.url
      type  = "PLAINTEXT"
    }
    environment_variable {
      name  = "STATE_TABLE"
      value = aws_dynamodb_table.state.name
      type  = "PLAINTEXT"
    }
  }
  logs_config {
    cloudwatch_logs {
      group_name = "/aws/codebuild/erp-build"
    }
  }
}

resource "aws_codebuild_project" "deploy" {
  name          = "erp-deploy"
  description   = "helm upgrade --install with the built tags, wait for the rollout (buildspec.yml)"
  service_role   = aws_iam_role.deploy.arn
  build_timeout  = 30
  encryption_key = aws_kms_key.chatops.arn

  source {
    type      = "CODEPIPELINE"
    buildspec = "buildspec.yml"
  }
  artifacts {
    type = "CODEPIPELINE"
  }
  cache { # the buildspec's verified erp-chatops and helm (cache.paths), reused by the next build on the host
    type  = "LOCAL"
    modes = ["LOCAL_CUSTOM_CACHE"]
  }
  environment {
    compute_type = "BUILD_GENERAL1_SMALL"
    image        = "aws/codebuild/standard:7.0"
    type         = "LINUX_CONTAINER"

    environment_variable {
      name  = "EKS_CLUSTER_NAME"
      value = "/erp/${var.environment}/eks/cluster-name"
      type  = "PARAMETER_STORE"
    }
    environment_variable {
      name  = "HELM_VERSION"
      value = "/erp/${var.environment}/helm/version"
      type  = "PARAMETER_STORE"
    }
    environment_variable { # progress lines go to the bot's progress queue: CI holds no Slack credential
      name  = "PROGRESS_QUEUE_URL"
      value = aws_sqs_queue.progress.url
      type  = "PLAINTEXT"
    }
    environment_variable {
      name  = "STATE_TABLE"
      value = aws_dynamodb_table.state.name
      type  = "PLAINTEXT"
    }
  }
  logs_config {
    cloudwatch_logs {
      group_name = "/aws/codebuild/erp-deploy"
    }
  }
}

resource "aws_codepipeline" "erp" {
  name           = local.pipeline_name
  role_arn       = aws_iam_role.codepipeline.arn
  pipeline_type  = "V2"
  execution_mode = "PARALLEL"

  artifact_store {
    location = aws_s3_bucket.artifacts.bucket
    type     = "S3"
    encryption_key {
      id   = aws_kms_key.chatops.arn
      type = "KMS"
    }
  }

  variable {
    name          = "SERVICE"
    default_value = " "
    description   = "A service, all, or blank for whatever changed"
  }
  variable {
    name          = "ENVIRONMENT"
    default_value = "dev"
    description   = "dev or prod"
  }
  variable {
    name          = "REQUESTED_BY"
    default_value = " "
    description   = "Slack user ID of who asked for the deploy"
  }
  variable {
    name          = "SLACK_CHANNEL"
    default_value = " "
    description   = "Channel of the deploy card"
  }
  variable {
    name          = "SLACK_THREAD_TS"
    default_value = " "
    description   = "ts of the deploy card, for thread replies"
  }
  variable {
    name          = "PROMOTE_IMAGE"
    default_value = " "
    description   = "service=tag@sha256:digest that passed dev: promote it, with no build (/erp promote)"
  }

  stage {
    name = "Source"
    action {
      name             = "Source"
      category         = "Source"
      owner            = "AWS"
      provider         = "CodeStarSourceConnection"
      version          = "1"
      output_artifacts = ["SourceOutput"]
      namespace        = "SourceVariables"
      configuration = {
        ConnectionArn        = var.github_connection_arn
        FullRepositoryId     = var.github_repository
        BranchName           = "main"
        OutputArtifactFormat = "CODEBUILD_CLONE_REF" # the build diffs against the last deploy
      }
    }
  }

  stage {
    name = "Build"
    before_entry {
      condition {
        result = "SKIP" # a promotion deploys the image that passed dev: no build
        rule {
          name = "NotAPromotion"
          rule_type_id {
            category = "Rule"
            owner    = "AWS"
            provider = "VariableCheck"
            version  = "1"
          }
          configuration = {
            Variable = "#{variables.PROMOTE_IMAGE}"
            Value    = " "
            Operator = "EQ"
          }
        }
      }
    }
    action {
      name             = "Build"
      category         = "Build"
      owner            = "AWS"
      provider         = "CodeBuild"
      version          = "1"
      input_artifacts = ["SourceOutput"] # images go to ECR; the buildspec produces no artifact
      namespace       = "BuildVariables"
      configuration = {
        ProjectName          = aws_codebuild_project.build.name
        EnvironmentVariables = jsonencode(concat(local.pipeline_env_vars, [{ name = "DEPLOY_PHASE", value = "build", type = "PLAINTEXT" }]))
      }
    }
  }

  stage {
    name = "Approval"
    before_entry {
      condition {
        result = "SKIP" # the approval applies to prod only
        rule {
          name = "ProdOnly"
          rule_type_id {
            category = "Rule"
            owner    = "AWS"
            provider = "VariableCheck"
            version  = "1"
          }
          configuration = {
            Variable = "#{variables.ENVIRONMENT}"
            Value    = "prod"
            Operator = "EQ"
          }
        }
      }
    }
    action {
      name     = "Approval"
      category = "Approval"
      owner    = "AWS"
      provider = "Manual"
      version  = "1"
      configuration = {
        CustomData = "Production deploy of #{variables.SERVICE} requested by #{variables.REQUESTED_BY}"
      }
    }
  }

  stage {
    name = "Deploy"
    before_entry {
      condition {
        result = "SKIP" # a promotion deploys the image that passed dev: no build
        rule {
          name = "NotAPromotion"
          rule_type_id {
            category = "Rule"
            owner    = "AWS"
            provider = "VariableCheck"
            version  = "1"
          }
          configuration = {
            Variable = "#{variables.PROMOTE_IMAGE}"
            Value    = " "
            Operator = "EQ"
          }
        }
      }
    }
    action {
      name            = "Deploy"
      category        = "Build"
      owner           = "AWS"
      provider        = "CodeBuild"
      version         = "1"
      input_artifacts = ["SourceOutput"] # the chart and the buildspec, at the built commit
      configuration = {
        ProjectName = aws_codebuild_project.deploy.name
        EnvironmentVariables = jsonencode(concat(local.pipeline_env_vars, [
          { name = "IMAGE_TAGS", value = "#{BuildVariables.IMAGE_TAGS}", type = "PLAINTEXT" },
          { name = "DEPLOY_PHASE", value = "deploy", type = "PLAINTEXT" },
        ]))
      }
    }
  }

  stage {
    name = "Promote"
    before_entry {
      condition {
        result = "SKIP" # only a promotion
        rule {
          name = "PromotionOnly"
          rule_type_id {
            category = "Rule"
            owner    = "AWS"
            provider = "VariableCheck"
            version  = "1"
          }
          configuration = {
            Variable = "#{variables.PROMOTE_IMAGE}"
            Value    = " "
            Operator = "NE"
          }
        }
      }
    }
    action {
      name            = "Promote"
      category        = "Build"
      owner           = "AWS"
      provider        = "CodeBuild"
      version         = "1"
      input_artifacts = ["SourceOutput"] # the chart and the buildspec; the image is the one dev ran
      configuration = {
        ProjectName = aws_codebuild_project.deploy.name
        EnvironmentVariables = jsonencode(concat(local.pipeline_env_vars, [
          { name = "IMAGE_TAGS", value = "#{variables.PROMOTE_IMAGE}", type = "PLAINTEXT" },
          { name = "DEPLOY_PHASE", value = "promote", type = "PLAINTEXT" },
        ]))
      }
    }
  }

  trigger {
    provider_type = "CodeStarSourceConnection"
    git_configuration {
      source_action_name = "Source"
      push {
        branches {
          includes = ["main"]
        }
      }
    }
  }
}
