"""Services: one module per concept, owning its rules and state transitions.

Pages, the API and tasks call them; they call lib/, engine/, display/ and models,
and queue tasks by name (lib/queue.py) rather than importing them.
"""
