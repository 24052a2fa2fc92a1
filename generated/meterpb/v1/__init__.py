"""Generated from protos/ by scripts/proto.sh. DO NOT CHANGE."""
