"""Agents spoken to over the Agent Client Protocol (ACP): supervised child processes."""
