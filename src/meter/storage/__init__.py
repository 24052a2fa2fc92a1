"""PostgreSQL storage: tables, migrations, engines and repositories."""
