"""The Yahoo client: transport, rate limit, breaker, response cache, replay and live sessions."""
