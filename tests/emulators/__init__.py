"""Loopback emulators of the upstream APIs (OpenAI, Stability, BFL, Replicate, Bedrock, Stripe).

Each speaks its upstream's documented wire format closely, including errors, refusals, rate limits, slow answers,
polling and malformed replies, so the adapters are tested against the real protocol without the internet.
"""
