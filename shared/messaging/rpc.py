"""Requests answered over RabbitMQ's direct reply-to: the asker consumes a pseudo-queue, with
no queue declared per asker, and each answer names its request by the correlation id.

The asker (the gateway's BrokerClient) consumes DIRECT_REPLY_TO with auto-ack on the
channel it publishes from, before publishing, and sets `reply_to=DIRECT_REPLY_TO` and a
`correlation_id` on each request; the answerer calls `Channel.reply(delivery, answer)`.
"""

from __future__ import annotations

DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
