"""Voice connectors: ``twilio.TwilioVoiceConnector`` (text-to-speech calls)."""
