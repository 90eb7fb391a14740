"""Routes, choices and their compute cost. Imports only torch."""

from duollm.routing.cost import CostTable, cost_table, route_cost
from duollm.routing.route import Choice, check_route, format_route, parse_route

__all__ = ["Choice", "check_route", "format_route", "parse_route", "CostTable", "cost_table", "route_cost"]
