"""Reports: instruction traces and disassembly for people, machine-readable forms for tools."""
