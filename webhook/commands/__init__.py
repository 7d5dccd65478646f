"""The subcommands behind `webhook.cli`: `mutate`, `report`, their help and the server's logging."""
