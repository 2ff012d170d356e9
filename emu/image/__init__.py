"""Images: loading an ELF reader (a project blob, a real vDSO or a dump) and everything
known about it before it runs: clock-page layout, `.altinstructions`, call ABI, source lines,
and (for the blob build) where a reader's pvti loads sit relative to its version window."""
