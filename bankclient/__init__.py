"""A small client of the bank: knows every DC's gateway and fails over between them."""

from bankclient.client import BankClient, GatewayUnavailable, new_request_id, read_ca, read_token

__all__ = ["BankClient", "GatewayUnavailable", "new_request_id", "read_ca", "read_token"]
