"""PostgreSQL plumbing shared by every domain: URLs, the embedded server, engines, the schema."""
