"""The Leaderboard view: Bradley-Terry ratings with bootstrap intervals per assistant."""

from __future__ import annotations

import gradio as gr
from qtune.feedback import leaderboard as lb
from qtune.feedback.store import FeedbackWriteError
from qtune.ui.state import LOCAL_OWNER, UIState

LEADERBOARD_HEADERS = ["Rank", "Model", "Kind", "Rating", "95% CI", "Win rate", "Votes",
                       "W / L / T"]


def rating_plot(standings: list[lb.Standing], assistant: str):
    """Ratings with their intervals, best on top (a matplotlib Figure, not pyplot)."""
    if not standings:
        return None
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 0.6 * len(standings) + 1.2), layout="constrained")
    axes = figure.subplots()
    ordered = list(reversed(standings))
    ratings = [s.rating for s in ordered]
    errors = [[s.rating - s.ci_low for s in ordered], [s.ci_high - s.rating for s in ordered]]
    axes.errorbar(ratings, range(len(ordered)), xerr=errors, fmt="o", capsize=4)
    axes.set_yticks(range(len(ordered)), [f"{s.model} ({s.votes})" for s in ordered])
    axes.axvline(lb.INIT_RATING, color="grey", linewidth=0.8, linestyle=":")
    axes.set_xlabel("Bradley–Terry rating (Elo scale), 95% bootstrap interval")
    axes.set_title(f"{assistant} assistant")
    return figure


def win_rate_plot(votes: list[dict], assistant: str):
    """Pairwise win rates: the row model's share of wins (ties half) against the column
    model, with the number of battles; blank where two models never met."""
    models, won, met = lb.pairwise_outcomes(votes)
    if len(models) < 2:
        return None
    import numpy as np
    from matplotlib.figure import Figure

    matrix = lb.win_rates(won, met)
    size = 1.1 * len(models) + 2.5
    figure = Figure(figsize=(size, size * 0.8), layout="constrained")
    axes = figure.subplots()
    image = axes.imshow(matrix, cmap="RdBu", vmin=0, vmax=1)
    for (row, col), value in np.ndenumerate(matrix):
        if not np.isnan(value):
            axes.text(col, row, f"{value:.0%}\n({int(met[row, col])})", ha="center", va="center",
                      fontsize=8)
    axes.set_xticks(range(len(models)), models, rotation=30, ha="right")
    axes.set_yticks(range(len(models)), models)
    axes.set_title(f"{assistant}: win rate of row vs column (battles)", fontsize=10)
    figure.colorbar(image, ax=axes, shrink=0.8)
    return figure



class LeaderboardHandlers(UIState):
    """Event handler of the Leaderboard tab."""

    def leaderboard(self, assistant: str, owner: str = LOCAL_OWNER):
        if not self.is_admin(owner):
            return [], None, None, "The leaderboard is for admins (`qtune users add --admin`)."
        try:
            votes = self.store.votes(assistant)
        except FeedbackWriteError as error:
            return [], None, None, f"Cannot read the votes: {error}"
        blind = lb.blind_votes(votes)
        standings = lb.leaderboard(blind, rounds=self.bootstrap_rounds)
        rows = [
            [rank, s.model, self.served_model(s.model).label, round(s.rating, 1),
             f"{s.ci_low:.0f} – {s.ci_high:.0f}", f"{100 * s.win_rate:.1f}%", s.votes,
             f"{s.wins} / {s.losses} / {s.ties}"]
            for rank, s in enumerate(standings, start=1)
        ]
        counted = len(lb.battles_from_votes(blind))
        named = len(votes) - len(blind)
        summary = (f"**{assistant}**: {counted} votes between {len(standings)} models "
                   f"(blind votes only; ratings: Bradley–Terry on the Elo scale, mean 1000; "
                   f"95% bootstrap intervals from {self.bootstrap_rounds} resamples)."
                   + (f" {named} votes cast with the names shown, or on answers that named "
                      "a model, are stored but not counted." if named else ""))
        if not standings:
            summary = f"**{assistant}**: no votes yet. Vote in the Compare tab."
        return (rows, rating_plot(standings, assistant), win_rate_plot(blind, assistant),
                summary)



def leaderboard_tab() -> dict:
    summary = gr.Markdown(elem_id="board-summary")
    refresh = gr.Button("Recompute", elem_id="board-refresh")
    table = gr.Dataframe(headers=LEADERBOARD_HEADERS, interactive=False, elem_id="board-table")
    with gr.Row():
        plot = gr.Plot(label="Ratings", elem_id="board-plot")
        heatmap = gr.Plot(label="Pairwise win rates", elem_id="board-heatmap")
    return dict(summary=summary, refresh=refresh, table=table, plot=plot, heatmap=heatmap)


