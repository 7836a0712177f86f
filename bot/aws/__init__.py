"""The AWS adapter: the only place the bot talks to AWS (boto3, off the event loop).

`clients` (retry modes, endpoints from boto3's own resolution, metrics), `state` (the DynamoDB
table all replicas share), `codepipeline`, `ecr_scans`, `logs_insights`.
"""
