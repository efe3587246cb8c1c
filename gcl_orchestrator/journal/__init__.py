"""The orchestrator's journal in the store (bucket_layout.md, `.gclo/journal/`): what it has learned of each
object, so that a restart reads the metadata only of objects the journal does not know in their current version."""
from .log import JOURNAL_PREFIX, Journal, JournalConflict, Known, load_journal

__all__ = ["JOURNAL_PREFIX", "Journal", "JournalConflict", "Known", "load_journal"]
