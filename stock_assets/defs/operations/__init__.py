"""Operations: alerts (webhook, e-mail) on failed runs, failed checks and stale data; dead runs reaped."""
