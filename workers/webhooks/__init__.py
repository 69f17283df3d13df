"""Webhook deliveries: signing.py (Standard Webhooks), delivery.py (one guarded HTTP attempt),
attempt.py (the rq job: retries, dead letters), rqthreads.py (rq workers and scheduler in threads)."""
