"""`kvinject fetch`: the init container that writes Key Vault objects into the pod's in-memory volume.

Everything it needs comes from its environment (set by the webhook). Every object is read into memory first,
one thread per vault (`reading`); only when all reads succeeded is anything written, each file atomically
(`files`). On failure the reasons go to the termination log (`report`) and nothing is left on disk.

It never imports a store's SDK: it reads through the provider's `Reader` (webhook.providers.reading), and the
provider turns the SDK's errors into `ReadError`s. Values are held as bytes and never formatted into any
message, log line or exception.
"""

from webhook.fetch.config import ConfigError, FetchConfig, load_config, termination_log_path
from webhook.fetch.files import WriteError, file_mode, remove_stale_temps, write_all
from webhook.fetch.main import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, ReaderFactory, fetch, main, run
from webhook.fetch.reading import (
    BACKOFF_BASE,
    BACKOFF_CAP,
    RETRY_AFTER_CAP,
    Backoff,
    Clock,
    Deadline,
    ReadOutcome,
    fetch_all,
    fetch_vault,
    read_with_retries,
)
from webhook.fetch.report import TERMINATION_LOG_LIMIT, failure_reason, termination_message, write_termination_log

__all__ = [
    "BACKOFF_BASE",
    "BACKOFF_CAP",
    "EXIT_CONFIG",
    "EXIT_FAILED",
    "EXIT_OK",
    "RETRY_AFTER_CAP",
    "TERMINATION_LOG_LIMIT",
    "Backoff",
    "Clock",
    "ConfigError",
    "Deadline",
    "FetchConfig",
    "ReadOutcome",
    "ReaderFactory",
    "WriteError",
    "failure_reason",
    "fetch",
    "fetch_all",
    "fetch_vault",
    "file_mode",
    "load_config",
    "main",
    "read_with_retries",
    "remove_stale_temps",
    "run",
    "termination_log_path",
    "termination_message",
    "write_all",
    "write_termination_log",
]
