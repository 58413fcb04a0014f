"""Placement and routing optimisation: where functions run and how requests reach them. Pure.

See docs/design/0003-planner.md.
"""

from __future__ import annotations

from edgefn.placement._demand import DemandModel, Observation, fit_demand
from edgefn.placement._facility import (
    FacilityProblem,
    FacilityResult,
    Formulation,
    lp_bound,
    solve_facility,
)
from edgefn.placement._inputs import FunctionsFile, read_demand, read_functions
from edgefn.placement._lagrange import LagrangianResult, solve_lagrangian
from edgefn.placement._milp import MAX_MILP_VARIABLES, MilpResult, solve_milp
from edgefn.placement._model import (
    Client,
    FunctionSpec,
    PlacementPlan,
    PlacementProblem,
    Site,
    Weights,
    build_problem,
)
from edgefn.placement._orlib import parse_orlib, read_orlib
from edgefn.placement._plan import Method, plan, replan
from edgefn.placement._routing import RouteResult, RoutingWeights, route
from edgefn.placement._synthetic import world_instance
from edgefn.placement._value import Economics, plan_value

__all__ = [
    "MAX_MILP_VARIABLES",
    "Client",
    "DemandModel",
    "Economics",
    "FacilityProblem",
    "FacilityResult",
    "Formulation",
    "FunctionSpec",
    "FunctionsFile",
    "LagrangianResult",
    "Method",
    "MilpResult",
    "Observation",
    "PlacementPlan",
    "PlacementProblem",
    "RouteResult",
    "RoutingWeights",
    "Site",
    "Weights",
    "build_problem",
    "fit_demand",
    "lp_bound",
    "parse_orlib",
    "plan",
    "plan_value",
    "read_demand",
    "read_functions",
    "read_orlib",
    "replan",
    "route",
    "solve_facility",
    "solve_lagrangian",
    "solve_milp",
    "world_instance",
]
