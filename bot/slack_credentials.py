"""Slack credentials: from the environment, or from one Secrets Manager secret.

`SLACK_SECRET_ID` names a secret whose SecretString is JSON with the keys
`SLACK_BOT_TOKEN` and `SLACK_SIGNING_SECRET` (the same names as the variables,
so an ExternalSecret can also project it straight into the environment).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from bot.aws.clients import AwsClients, ClientError, error_code


class CredentialsError(Exception):
    pass


@dataclass(frozen=True)
class SlackCredentials:
    bot_token: str = field(repr=False)
    signing_secret: str = field(repr=False)


def load_slack_credentials(environ: Mapping[str, str], aws: AwsClients) -> SlackCredentials:
    token = environ.get("SLACK_BOT_TOKEN", "")
    secret = environ.get("SLACK_SIGNING_SECRET", "")
    secret_id = environ.get("SLACK_SECRET_ID", "")
    if secret_id and not (token and secret):
        try:
            resp = aws.client("secretsmanager").get_secret_value(SecretId=secret_id)
        except ClientError as e:
            raise CredentialsError(f"SLACK_SECRET_ID {secret_id}: cannot read the secret ({error_code(e)})") from None
        try:
            values = json.loads(resp.get("SecretString") or "")
        except ValueError:
            values = None
        if not isinstance(values, dict):
            raise CredentialsError(f"SLACK_SECRET_ID {secret_id}: expected JSON with SLACK_BOT_TOKEN and"
                                   " SLACK_SIGNING_SECRET")
        token = token or str(values.get("SLACK_BOT_TOKEN", ""))
        secret = secret or str(values.get("SLACK_SIGNING_SECRET", ""))
    missing = [name for name, v in (("SLACK_BOT_TOKEN", token), ("SLACK_SIGNING_SECRET", secret)) if not v]
    if missing:
        raise CredentialsError(f"missing {' and '.join(missing)}: set them, or SLACK_SECRET_ID to a Secrets"
                               " Manager secret holding both")
    return SlackCredentials(bot_token=token, signing_secret=secret)
