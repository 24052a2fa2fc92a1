"""Events and webhooks (DESIGN.md §9): the outbox's types, its storage and the dispatcher."""
