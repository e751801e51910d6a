"""tether: durable transport for AI agent sessions."""
