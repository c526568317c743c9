"""jobspec: declarative, GitOps-style tuning jobs for LLMs."""

__version__ = "0.1.0"
