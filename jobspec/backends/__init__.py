"""Tuning services behind one interface: each maps a Job to requests, and responses to the
backend-neutral ``RemoteModel`` and ``Progress`` of ``base``."""
