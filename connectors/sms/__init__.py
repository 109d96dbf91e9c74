"""SMS connectors: ``twilio.TwilioSmsConnector``, ``vonage.VonageSmsConnector``; segment maths."""
