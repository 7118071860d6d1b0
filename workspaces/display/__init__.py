"""A workspace's display, as the proxy and the thumbnail captures reach it.

``sockets`` opens a display's unix socket and checks who listens on it;
``tokens`` are the single-use grants (in Redis) that say which socket a
browser may reach; ``rfb`` is a small VNC client; ``rfb_filter`` keeps a
view-only connection's input from the desktop; ``proxy`` is the websocket
proxy that ties them together, run as a process of its own.

Nothing here imports Django, a service, a task or the API: the proxy runs
as an unprivileged user with only its own settings, and callers hand in the
Redis client.
"""
