"""ProX core: settings, the command line, privacy helpers shared by every part."""
