"""The simulated CRM world and the HTTPS emulators of the CRM APIs ProX uses."""
