"""The table of devices on the dashboard, when the engine drives several: the volunteer
selects a device in it to pause or finish that one (device_rows.py holds what it shows)."""

from __future__ import annotations

from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.widgets import DataTable

from allmende.client.tui.device_rows import DeviceBoard


class DeviceTable(DataTable[str]):
    """One row per device. While it has focus, p and f act on the row under the cursor;
    Escape leaves it, and p and f act on all devices again."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "leave", "All devices", show=False),
    ]

    def __init__(self, board: DeviceBoard) -> None:
        super().__init__(id="devices", cursor_type="row", zebra_stripes=False, classes="panel")
        self.board = board
        self._drawn: dict[str, tuple[str, str, str, str]] = {}

    def on_mount(self) -> None:
        self.add_columns("Device", "State", "Temp", "Items/s")
        for device, row in self.board.rows.items():
            self.add_row(*self.board.cells(row), key=device)
        self.styles.height = len(self.board.rows) + 3  # header and border
        self.border_title = "Devices (Tab selects one for p and f; Escape: all)"

    def redraw(self) -> None:
        """Update the cells that changed (the dashboard redraws on every engine event)."""
        columns = list(self.columns)
        for device, row in self.board.rows.items():
            cells = self.board.cells(row)
            if self._drawn.get(device) == cells:
                continue
            self._drawn[device] = cells
            for column, value in zip(columns, cells, strict=True):
                self.update_cell(device, column, value, update_width=True)

    @property
    def selected(self) -> str | None:
        """The device under the cursor while the table has focus, else None (all)."""
        if not self.has_focus or not self.board.rows:
            return None
        return list(self.board.rows)[self.cursor_row]

    def action_leave(self) -> None:
        self.screen.set_focus(None)
