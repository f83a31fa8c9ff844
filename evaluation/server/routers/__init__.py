"""HTTP routes, one module per concern: scoring, leaderboard, admin, service info."""
