"""What every layer shares and no domain owns: the Redis client, events, refusals,
object storage, service health, the engine access seam and task queueing.

Nothing here imports a service, a task, the API or the pages.
"""
