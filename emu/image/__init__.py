"""Images: loading an ELF reader (a project blob, a real vDSO or a dump) and everything
known about it before it runs: clock-page layout, `.altinstructions`, call ABI, source lines."""
