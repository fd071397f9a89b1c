"""The search index's layout in Redis, its reader and the caches, and the PostgreSQL read model they fall back
to: written by the search service, read by the gateway (docs/ARCHITECTURE.md, "Search and caching")."""
