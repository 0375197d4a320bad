"""Telephony test harness: real two-leg SIP calls through Asterisk, checked on the wire.

SIPp places and answers the calls (scenarios/), tcpdump records what each party
actually receives, and analysis.py says per 20 ms RTP frame whether it was speech.
"""
