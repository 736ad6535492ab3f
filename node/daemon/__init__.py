"""The trio node daemon."""
