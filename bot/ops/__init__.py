"""What an operator runs by hand, with their own credentials (not the bot's role)."""
