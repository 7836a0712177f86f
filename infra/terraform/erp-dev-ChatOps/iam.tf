# --- the bot's service account (IRSA) -----------------------------------------------------
# Exactly the API calls the bot makes (tests/test_infra.py derives them from the code and
# compares), each on the ERP resources only.

data "aws_iam_policy_document" "bot_trust" {
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [var.eks_oidc_provider_arn]
    }
    condition {
      test     = "StringEquals"
      variable = "${var.eks_oidc_provider_url}:sub"
      values   = ["system:serviceaccount:${var.bot_namespace}:${var.bot_service_account}"]
    }
    condition {
      test     = "StringEquals"
      variable = "${var.eks_oidc_provider_url}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "bot" {
  statement {
    sid       = "DeployAndReadThePipeline"
    actions   = ["codepipeline:StartPipelineExecution", "codepipeline:GetPipelineState", "codepipeline:GetPipelineExecution", "codepipeline:ListPipelineExecutions", "codepipeline:ListActionExecutions"]
    resources = [local.pipeline_arn]
  }
  statement {
    sid       = "AnswerTheProdApproval"
    actions   = ["codepipeline:PutApprovalResult"]
    resources = ["${local.pipeline_arn}/Approval/Approval"]
  }
  statement {
    sid       = "ConsumePipelineEvents" # and the build's progress lines
    actions   = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"]
    resources = [aws_sqs_queue.events.arn, aws_sqs_queue.progress.arn]
  }
  statement {
    sid       = "SharedState"
    actions   = ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:Query", "dynamodb:DescribeTable", "dynamodb:BatchWriteItem", "dynamodb:BatchGetItem"]
    resources = [aws_dynamodb_table.state.arn]
  }
  statement {
    sid       = "AppendToTheAuditTrail"
    actions   = ["dynamodb:PutItem", "dynamodb:Query"]
    resources = [aws_dynamodb_table.audit.arn]
  }
  statement {
    sid       = "TheAuditTrailIsAppendOnly" # an explicit deny: no later allow can grant it back
    effect    = "Deny"
    # every way to change or remove an item (PartiQL's included), or the table
    actions = ["dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem", "dynamodb:PartiQLUpdate",
    "dynamodb:PartiQLDelete", "dynamodb:DeleteTable", "dynamodb:UpdateTable", "dynamodb:UpdateTimeToLive"]
    resources = [aws_dynamodb_table.audit.arn]
  }
  statement {
    sid       = "ScanSummaries"
    actions   = ["ecr:DescribeImageScanFindings", "ecr:DescribeImages"]
    resources = [for r in local.repositories : "arn:aws:ecr:${var.region}:${var.account_id}:repository/${r}"]
  }
  statement {
    sid       = "LogQueries"
    actions   = ["logs:StartQuery"]
    resources = ["arn:aws:logs:${var.region}:${var.account_id}:log-group:/erp/*"]
  }
  statement {
    sid       = "LogQueryResults" # these two have no resource-level permissions in IAM
    actions   = ["logs:GetQueryResults", "logs:StopQuery"]
    resources = ["*"]
  }
  statement {
    sid       = "SlackCredentials"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [aws_secretsmanager_secret.slack.arn]
  }
  statement {
    sid       = "DecryptWithTheChatOpsKey" # used by DynamoDB and Secrets Manager on the bot's behalf
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.chatops.arn]
  }
}

resource "aws_iam_role" "bot" {
  name               = "${local.name}-bot"
  assume_role_policy = data.aws_iam_policy_document.bot_trust.json
}

resource "aws_iam_role_policy" "bot" {
  name   = "erp-chatops"
  role   = aws_iam_role.bot.id
  policy = data.aws_iam_policy_document.bot.json
}

# --- CodeBuild (buildspec.yml) -----------------------------------------------------------

data "aws_iam_policy_document" "codebuild_trust" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["codebuild.amazonaws.com"]
    }
  }
}

# Build and Deploy run as two roles. Build runs the repository's own code on every push, privileged (docker):
# whatever its role may do, anyone who can push may do. So Build may push and scan images and read the last
# deployed commits, and nothing of the cluster, the bot's state or prod; Deploy may reach the cluster and
# record what it deployed, and push no image. Neither holds a Slack credential: progress goes to the queue.

data "aws_iam_policy_document" "ci_common" { # what both CodeBuild roles need
  statement {
    sid       = "Parameters"
    actions   = ["ssm:GetParameters"]
    resources = ["arn:aws:ssm:${var.region}:${var.account_id}:parameter/erp/${var.environment}/*"] # what the buildspec reads
  }
  statement {
    sid       = "ProgressToTheBot" # no Slack credential in CI: the bot posts what arrives here
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.progress.arn]
  }
  statement {
    sid       = "TheAuditTrailIsNotCIs"
    effect    = "Deny"
    actions   = ["dynamodb:*"]
    resources = [aws_dynamodb_table.audit.arn]
  }
  statement {
    sid       = "PipelineArtifacts" # the source, and the tools it installs
    actions   = ["s3:GetObject", "s3:GetBucketLocation"]
    resources = [aws_s3_bucket.artifacts.arn, "${aws_s3_bucket.artifacts.arn}/*"]
  }
  statement {
    sid       = "SourceConnection" # the source is a clone reference (git history for the diff)
    actions   = ["codeconnections:UseConnection", "codestar-connections:UseConnection"]
    resources = [var.github_connection_arn]
  }
  statement {
    sid       = "ArtifactsKey"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.chatops.arn]
  }
}

data "aws_iam_policy_document" "build" {
  source_policy_documents = [data.aws_iam_policy_document.ci_common.json]
  statement {
    sid       = "BuildLogs"
    actions   = ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["arn:aws:logs:${var.region}:${var.account_id}:log-group:/aws/codebuild/erp-build*"]
  }
  statement {
    sid       = "EcrLogin"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }
  statement {
    sid = "PushAndScanImages"
    actions = ["ecr:BatchCheckLayerAvailability", "ecr:InitiateLayerUpload", "ecr:UploadLayerPart", "ecr:CompleteLayerUpload",
    "ecr:PutImage", "ecr:BatchGetImage", "ecr:StartImageScan", "ecr:DescribeImageScanFindings", "ecr:DescribeImages"]
    resources = [for r in local.repositories : "arn:aws:ecr:${var.region}:${var.account_id}:repository/${r}"]
  }
  statement {
    sid       = "ReadTheLastDeployedCommits" # what changed since: the one key space it reads, and only reads
    actions   = ["dynamodb:GetItem"]
    resources = [aws_dynamodb_table.state.arn]
    condition {
      test     = "ForAllValues:StringLike"
      variable = "dynamodb:LeadingKeys"
      values   = ["LASTDEPLOY#*"]
    }
  }
}

data "aws_iam_policy_document" "deploy" {
  source_policy_documents = [data.aws_iam_policy_document.ci_common.json]
  statement {
    sid       = "DeployLogs"
    actions   = ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["arn:aws:logs:${var.region}:${var.account_id}:log-group:/aws/codebuild/erp-deploy*"]
  }
  statement {
    sid       = "LastDeployedCommitsOnly" # the one key space CI reads and writes in the bot's table
    actions   = ["dynamodb:GetItem", "dynamodb:PutItem"]
    resources = [aws_dynamodb_table.state.arn]
    condition {
      test     = "ForAllValues:StringLike"
      variable = "dynamodb:LeadingKeys"
      values   = ["LASTDEPLOY#*"]
    }
  }
  statement {
    # before helm runs: the environment's lock, the freeze calendar the bot published, the bot's grant for
    # this execution (bot/ci/build_steps.deploy_gate). Read only: the pipeline obeys them, never sets them.
    sid       = "ReadLocksFreezesAndGrants"
    actions   = ["dynamodb:GetItem"]
    resources = [aws_dynamodb_table.state.arn]
    condition {
      test     = "ForAllValues:StringLike"
      variable = "dynamodb:LeadingKeys"
      values   = ["LOCK#*", "RULES#*", "GRANT#*"]
    }
  }
  statement {
    sid       = "KubeconfigForHelm"
    actions   = ["eks:DescribeCluster"]
    resources = ["arn:aws:eks:${var.region}:${var.account_id}:cluster/erp-*"]
  }
  statement {
    sid       = "DeployTrace"
    actions   = ["xray:PutTraceSegments"]
    resources = ["*"]
  }
}

resource "aws_iam_role" "build" {
  name               = "${local.name}-build"
  assume_role_policy = data.aws_iam_policy_document.codebuild_trust.json
}

resource "aws_iam_role_policy" "build" {
  name   = "erp-build"
  role   = aws_iam_role.build.id
  policy = data.aws_iam_policy_document.build.json
}

resource "aws_iam_role" "deploy" {
  name               = "${local.name}-deploy"
  assume_role_policy = data.aws_iam_policy_document.codebuild_trust.json
}

resource "aws_iam_role_policy" "deploy" {
  name   = "erp-deploy"
  role   = aws_iam_role.deploy.id
  policy = data.aws_iam_policy_document.deploy.json
}

# --- CodePipeline -------------------------------------------------------------------------

data "aws_iam_policy_document" "codepipeline_trust" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["codepipeline.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "codepipeline" {
  statement {
    sid       = "Artifacts"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:GetBucketVersioning", "s3:GetObjectVersion"]
    resources = [aws_s3_bucket.artifacts.arn, "${aws_s3_bucket.artifacts.arn}/*"]
  }
  statement {
    sid       = "RunBuilds"
    actions   = ["codebuild:StartBuild", "codebuild:BatchGetBuilds"]
    resources = [aws_codebuild_project.build.arn, aws_codebuild_project.deploy.arn]
  }
  statement {
    sid       = "Source"
    actions   = ["codeconnections:UseConnection", "codestar-connections:UseConnection"]
    resources = [var.github_connection_arn]
  }
}

resource "aws_iam_role" "codepipeline" {
  name               = "${local.name}-codepipeline"
  assume_role_policy = data.aws_iam_policy_document.codepipeline_trust.json
}

resource "aws_iam_role_policy" "codepipeline" {
  name   = "erp-pipeline"
  role   = aws_iam_role.codepipeline.id
  policy = data.aws_iam_policy_document.codepipeline.json
}
