"""What a person typed, shown back by the bot, is text, never markup.

Slack's "Formatting text for app surfaces" (docs.slack.dev, "Escaping text"): `&`, `<` and `>` are
control characters in mrkdwn and must be sent as `&amp;`, `&lt;` and `&gt;`; then `<!channel>`,
`<@U123>` or `<https://x|label>` in a reject reason or a log filter is shown as typed instead of
pinging a channel, mentioning someone or hiding a link behind a label.
"""

from __future__ import annotations


def escape_text(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
