"""The Slack adapter: the Web API client, Block Kit rendering of the delivery logic's objects,
user-group look-ups, and the shape check of what Slack sends before Bolt sees it."""
