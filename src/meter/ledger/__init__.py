"""The ledger: workspaces' lots, holds and journal, and the rules that change them."""
