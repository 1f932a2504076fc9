"""Downstream decision makers: batched decide / cost / oracle / regret in torch."""
from agents.base import AgentGroup, Evaluation
from agents.data_center import DataCenterAgent
from agents.ev_charging import EVChargingAgent
from agents.phone_charging import PhoneChargingAgent
from agents.pulp_backend import PulpAgentGroup, SlotMILPAgent
from agents.slot_scheduling import SlotSchedulingAgent

__all__ = ["AgentGroup", "Evaluation", "DataCenterAgent", "EVChargingAgent", "PhoneChargingAgent",
           "PulpAgentGroup", "SlotMILPAgent", "SlotSchedulingAgent"]
