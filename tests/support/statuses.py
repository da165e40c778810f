"""A message's status moves, as the API documents them: every other move is refused."""

STATUSES = ("pending", "in_progress", "complete", "failed", "cancelled")
ALLOWED = {
    ("pending", "in_progress"),
    ("pending", "complete"),
    ("pending", "failed"),
    ("pending", "cancelled"),
    ("in_progress", "complete"),
    ("in_progress", "failed"),
    ("in_progress", "cancelled"),
    ("failed", "in_progress"),  # a failed answer resumed
}
