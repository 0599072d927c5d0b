"""Upstream adapters: one module per wire protocol; see ``base.Adapter`` and ``registry``."""
