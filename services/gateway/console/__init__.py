"""The operator console at /ops: server-rendered pages (Jinja2) with htmx for partial updates."""
