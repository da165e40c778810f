"""Archive: the messages of a session idle for ARCHIVE_AFTER_DAYS move to the object store as
its gzipped chat-store/1 export; the session row stays. Any access to the messages brings them
back first.

A session is in one of three states (chat_session columns):

- live: archived_at and archive_key null; the messages are in the database.
- half-way: archive_key set, archived_at null; the messages are in the database, and the object
  at archive_key, if there is one, is a copy being written or one left by a restore. Never the
  only copy.
- archived: archived_at set; the messages are only in the object at archive_key.

Each step runs (and commits) on its own, so a crash between any two leaves one of these states,
and the next run of the job (`job`) finishes what was begun: a half-way session still due for
archiving is archived (its key is reused, its object written again), any other has its object
deleted and its key forgotten.

Archiving (`archiving`): begin_archive (record the key) → write_archive (stream the export, with
the session's generations, into the object; the upload completes only if the session did not
change while it was read) → verify_archive (read it back: the same bytes) → commit_archive (one
transaction under the session's row lock: still unchanged, the object still the verified one,
then archived_at is set, the messages' ids kept in archived_message and the messages deleted).
An archive aborted after the object was written deletes it (abandon_archive), unless the session
still has its key: else a session deleted meanwhile would leave it to no one.

Restoring (`restoring`): load_archive (read and check the object) → mark_restored (archived_at
cleared, under the row lock; nothing more when another restore came first) →
insert_archived_messages (refused when another session's message has one of the ids; rows
already there are skipped; the ids leave archived_message; the generations come back without a
lease), in one transaction → release_archive (the object deleted under the row lock, the key
forgotten).

Deleting (`deletions`): whatever deletes a session lists its object's key (archive_deletion) in
the transaction that deletes its rows, and deletes the object after that commits; what the
store refused, or a stopped process left, is deleted by housekeeping.

An id stays taken while its message is archived: archived_message holds it from the archive's
commit to the restore's, and a message created with it is refused as one with a stored id is.
"""

from __future__ import annotations

from chat_store.services.archive.archiver import (
    KEY_PREFIX,
    ArchiveAborted,
    ArchiveConflict,
    ArchivedGeneration,
    Archiver,
    object_key,
)
from chat_store.services.archive.archiving import (
    ArchivePlan,
    VerifiedArchive,
    WrittenArchive,
    abandon_archive,
    archive_session,
    begin_archive,
    commit_archive,
    verify_archive,
    write_archive,
)
from chat_store.services.archive.deletions import (
    DeletionReport,
    delete_after_commit,
    delete_listed,
    delete_objects,
    finish_deleting,
)
from chat_store.services.archive.job import (
    BATCH_SESSIONS,
    ArchiveReport,
    archive_idle_sessions,
    finish_half_way,
)
from chat_store.services.archive.restoring import (
    LoadedArchive,
    ensure_restored,
    insert_archived_messages,
    load_archive,
    mark_restored,
    release_archive,
    restore_chat_session,
    restore_for_access,
    restore_in,
)

__all__ = [
    "BATCH_SESSIONS",
    "KEY_PREFIX",
    "ArchiveAborted",
    "ArchiveConflict",
    "ArchivePlan",
    "ArchiveReport",
    "ArchivedGeneration",
    "Archiver",
    "DeletionReport",
    "LoadedArchive",
    "VerifiedArchive",
    "WrittenArchive",
    "abandon_archive",
    "archive_idle_sessions",
    "archive_session",
    "begin_archive",
    "commit_archive",
    "delete_after_commit",
    "delete_listed",
    "delete_objects",
    "ensure_restored",
    "finish_deleting",
    "finish_half_way",
    "insert_archived_messages",
    "load_archive",
    "mark_restored",
    "object_key",
    "release_archive",
    "restore_chat_session",
    "restore_for_access",
    "restore_in",
    "verify_archive",
    "write_archive",
]
