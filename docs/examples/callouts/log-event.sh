#!/bin/sh
# A callout: run by the agent for every event it publishes. The arguments are the event's FAN
# line split on spaces; the environment has TAKEOVER_EVENT (JSON) and TAKEOVER_<FIELD>.
# Killed past the configured timeout (with its children); its exit code is logged (info when 0,
# warn otherwise) and counted (takeover_callouts_total).
case "$TAKEOVER_STATUS" in
  DOWN|NOT_RESTARTING) logger -t takeover "$TAKEOVER_TYPE $TAKEOVER_STATUS ($TAKEOVER_REASON): $*" ;;
esac
