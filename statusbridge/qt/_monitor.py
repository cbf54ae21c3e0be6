"""``JobMonitor``: a ready window over a status location — table, progress bars, filter, cancel."""

from __future__ import annotations

import logging
import os
from typing import Any

from PySide6.QtCore import (
    QItemSelection,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QRectF,
    QSortFilterProxyModel,
    Qt,
    Slot,
)
from PySide6.QtGui import QAction, QCloseEvent, QColor, QKeySequence, QPainter, QPalette
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from statusbridge.cache import Snapshot, StatusCache
from statusbridge.display import STATUS_COLOURS, done_text, floor_share, percent, short_id
from statusbridge.errors import StatusBridgeError
from statusbridge.jobs import request_cancel
from statusbridge.qt._model import Column, JobTableModel
from statusbridge.record import BatchJob, BatchStatus
from statusbridge.store import StatusStore
from statusbridge.store._location import location_text

__all__ = ["JobMonitor", "ProgressDelegate"]

logger = logging.getLogger(__name__)

_ALL = "All batches"
_WIDTHS = {
    Column.JOB: 190,
    Column.BATCH: 120,
    Column.STATE: 100,
    Column.PROGRESS: 170,
    Column.ELAPSED: 80,
    Column.ETA: 80,
}


class ProgressDelegate(QStyledItemDelegate):
    """Draws ``JobTableModel.ProgressRole`` as a bar in the state colour, percent beside it."""

    def paint(
        self,
        painter: QPainter,
        option: QStyleOptionViewItem,
        index: QModelIndex | QPersistentModelIndex,
    ) -> None:
        widget = option.widget
        style = widget.style() if widget is not None else QApplication.style()
        # Selection and hover background first, like any other cell.
        style.drawPrimitive(QStyle.PrimitiveElement.PE_PanelItemViewItem, option, painter, widget)
        job = index.data(JobTableModel.JobRole)
        if not isinstance(job, BatchJob):
            return
        progress = index.data(JobTableModel.ProgressRole)
        cell = option.rect.adjusted(8, 0, -8, 0)
        text_width = option.fontMetrics.horizontalAdvance("100%") + 10
        bar = QRectF(cell.left(), cell.center().y() - 5, max(0, cell.width() - text_width), 10)
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor("#e5e7eb"))
        painter.drawRoundedRect(bar, 5, 5)
        if progress:
            painter.setBrush(QColor(STATUS_COLOURS[job.status]))
            filled = floor_share(progress, 1000) / 1000  # full only when completed
            painter.drawRoundedRect(QRectF(bar.x(), bar.y(), bar.width() * filled, 10), 5, 5)
        role = QPalette.ColorRole.HighlightedText if selected else QPalette.ColorRole.Text
        painter.setPen(option.palette.color(role))
        text = "" if progress is None else percent(progress)
        painter.drawText(
            cell.adjusted(cell.width() - text_width, 0, 0, 0),
            int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter),
            text,
        )
        painter.restore()


class _TailDelegate(QStyledItemDelegate):
    """Elides on the left: job and batch ids differ at the end (``…39430f63-0001``)."""

    def initStyleOption(
        self, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex
    ) -> None:
        super().initStyleOption(option, index)
        option.textElideMode = Qt.TextElideMode.ElideLeft


class _BatchFilter(QSortFilterProxyModel):
    """Shows the jobs of one batch (or all); sorts by ``JobTableModel.SortRole``.

    With one batch shown, job ids lose that batch's prefix (``display.short_id``).
    """

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._batch: str | None = None
        self.setSortRole(JobTableModel.SortRole)
        self.setDynamicSortFilter(True)

    @property
    def batch(self) -> str | None:
        return self._batch

    def set_batch(self, batch_id: str | None) -> None:
        if batch_id != self._batch:
            if hasattr(self, "endFilterChange"):  # Qt >= 6.10 deprecates invalidateRowsFilter
                self.beginFilterChange()
                self._batch = batch_id
                self.endFilterChange(QSortFilterProxyModel.Direction.Rows)
            else:  # pragma: no cover - older Qt
                self._batch = batch_id
                self.invalidateRowsFilter()

    def data(
        self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if (
            self._batch is not None
            and role == Qt.ItemDataRole.DisplayRole
            and index.column() == Column.JOB
        ):
            job = super().data(index, JobTableModel.JobRole)
            if isinstance(job, BatchJob):
                return short_id(job.id, batch_id=self._batch)
        return super().data(index, role)

    def filterAcceptsRow(
        self, source_row: int, source_parent: QModelIndex | QPersistentModelIndex
    ) -> bool:
        if self._batch is None:
            return True
        model = self.sourceModel()
        job = model.index(source_row, 0, source_parent).data(JobTableModel.JobRole)
        return isinstance(job, BatchJob) and job.batch_id == self._batch


class JobMonitor(QWidget):
    """A window that follows every job of ``location``: state, progress, elapsed time and ETA.

    ``location`` is anything ``StatusCache`` accepts. Pass ``cache`` to share an
    open cache instead (the monitor then leaves it open). The monitor only reads;
    "Cancel selected" asks the selected unfinished jobs to stop through
    ``statusbridge.jobs.request_cancel`` (as ``statusbridge cancel`` does), opening
    a ``StatusStore`` on the location the first time it is used.

    Closing the window (``close()``) releases what the monitor owns: the
    model's subscription, its cache and its store.
    """

    def __init__(
        self,
        location: str | os.PathLike[str] = "batch_status",
        parent: QWidget | None = None,
        *,
        cache: StatusCache | None = None,
        batch_id: str | None = None,
        max_refresh_rate: float = 30.0,
    ) -> None:
        super().__init__(parent)
        self._location = location
        self._own_cache = cache is None
        self._cache = cache if cache is not None else StatusCache(location)
        self._store: StatusStore | None = None
        self._released = False
        self._shown_location = location_text(location)  # a URL's password never shown
        self.setWindowTitle(f"statusbridge — {self._shown_location}")
        self.resize(1080, 460)

        self.model = JobTableModel(self._cache, parent=self, max_refresh_rate=max_refresh_rate)
        self.proxy = _BatchFilter(self)
        self.proxy.setSourceModel(self.model)

        self.table = QTableView(self)
        self.table.setModel(self.proxy)
        self.table.setItemDelegateForColumn(Column.PROGRESS, ProgressDelegate(self.table))
        tails = _TailDelegate(self.table)  # ids differ at the end: cut on the left
        self.table.setItemDelegateForColumn(Column.JOB, tails)
        self.table.setItemDelegateForColumn(Column.BATCH, tails)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setAlternatingRowColors(True)
        self.table.setShowGrid(False)
        self.table.setWordWrap(False)
        self.table.setStyleSheet(
            "QTableView::item { padding: 0 6px; }"
            "QHeaderView::section { padding: 4px 6px; border: none;"
            " border-bottom: 1px solid #d1d5db; background: #f3f4f6; font-weight: 600; }"
        )
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(28)
        header = self.table.horizontalHeader()
        header.setHighlightSections(False)
        header.setSortIndicator(-1, Qt.SortOrder.AscendingOrder)  # rows in arrival order...
        self.table.setSortingEnabled(True)  # ...until a header is clicked
        for column, width in _WIDTHS.items():
            self.table.setColumnWidth(column, width)
        header.setStretchLastSection(True)
        header.setSectionResizeMode(Column.MESSAGE, QHeaderView.ResizeMode.Stretch)

        self.batch_box = QComboBox(self)
        self.batch_box.addItem(_ALL, None)
        self.batch_box.setMinimumContentsLength(16)
        self.batch_box.currentIndexChanged.connect(self._batch_chosen)
        # The counts get a line of their own, wrapped if they must: squeezed beside the bar
        # they were cut ("13 cancellec") and ran under it.
        self.summary_label = QLabel(self)
        self.summary_label.setTextFormat(Qt.TextFormat.PlainText)  # never job text as markup
        self.summary_label.setWordWrap(True)
        self.summary_label.setSizePolicy(
            QSizePolicy.Policy.Ignored, QSizePolicy.Policy.MinimumExpanding
        )
        self.overall = QProgressBar(self)
        self.overall.setRange(0, 1000)
        self.overall.setFixedSize(120, 12)
        self.overall.setTextVisible(False)
        palette = self.overall.palette()
        done = QColor(STATUS_COLOURS[BatchStatus.COMPLETED])
        palette.setColor(QPalette.ColorRole.Highlight, done)
        self.overall.setPalette(palette)
        self.overall_label = QLabel(self)
        self.overall_label.setTextFormat(Qt.TextFormat.PlainText)
        self.overall_label.setMinimumWidth(self.fontMetrics().horizontalAdvance("100%") + 4)
        self.status_label = QLabel(self)
        self.status_label.setTextFormat(Qt.TextFormat.PlainText)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.cancel_action = QAction("Cancel selected", self)
        self.cancel_action.setShortcut(QKeySequence.StandardKey.Delete)
        self.cancel_action.setToolTip("Ask the selected unfinished jobs to stop (Del)")
        self.cancel_action.setEnabled(False)
        self.cancel_action.triggered.connect(self.cancel_selected)
        self.addAction(self.cancel_action)
        self.table.addAction(self.cancel_action)
        self.table.setContextMenuPolicy(Qt.ContextMenuPolicy.ActionsContextMenu)
        self.cancel_button = QPushButton(self.cancel_action.text(), self)
        self.cancel_button.setToolTip(self.cancel_action.toolTip())
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel_action.trigger)
        self.cancel_action.enabledChanged.connect(self.cancel_button.setEnabled)

        top = QHBoxLayout()
        top.addWidget(QLabel("Batch:", self))
        top.addWidget(self.batch_box, 1)
        top.addSpacing(12)
        top.addWidget(self.overall)
        top.addWidget(self.overall_label)
        top.addSpacing(12)
        top.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.summary_label)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.status_label)

        self.table.selectionModel().selectionChanged.connect(self._selection_changed)
        self.model.refreshed.connect(self._snapshot_shown)
        self.model.rowsRemoved.connect(self._selection_changed)
        self._snapshot_shown(self.model.snapshot)
        if batch_id is not None:
            self.set_batch(batch_id)

    # -- what the user does ----------------------------------------------------------
    def selected_jobs(self) -> list[BatchJob]:
        """The jobs of the selected rows, top to bottom."""
        rows = sorted(index.row() for index in self.table.selectionModel().selectedRows())
        jobs = [self.proxy.index(row, 0).data(JobTableModel.JobRole) for row in rows]
        return [job for job in jobs if isinstance(job, BatchJob)]

    def select_job(self, job_id: str) -> bool:
        """Select the row of ``job_id`` (False if it is not shown)."""
        row = self.model.row_of(job_id)
        if row is None:
            return False
        index = self.proxy.mapFromSource(self.model.index(row, 0))
        if not index.isValid():
            return False
        self.table.selectRow(index.row())
        return True

    @Slot()
    def cancel_selected(self) -> int:
        """Ask the selected unfinished jobs to stop; returns how many were asked."""
        jobs = [job for job in self.selected_jobs() if not job.is_finished]
        if not jobs:
            return 0
        try:
            if self._store is None:
                self._store = StatusStore(self._location)
            asked = [job.id for job in jobs if request_cancel(self._store, job.id)]
        except (StatusBridgeError, OSError, ValueError) as exc:
            logger.warning("statusbridge: cancel failed in %s: %s", self._shown_location, exc)
            self._say(f"Cannot cancel: {exc}", error=True)
            return 0
        shown = ", ".join(asked[:3]) + (" …" if len(asked) > 3 else "")
        self._say(f"Cancel requested for {len(asked)} job(s): {shown}" if asked else "")
        return len(asked)

    def set_batch(self, batch_id: str | None) -> None:
        """Show one batch (None: every job)."""
        found = self.batch_box.findData(batch_id)
        if found < 0:
            self.batch_box.addItem(batch_id or _ALL, batch_id)
            found = self.batch_box.count() - 1
        self.batch_box.setCurrentIndex(found)

    # -- slots -------------------------------------------------------------------------
    @Slot(int)
    def _batch_chosen(self, index: int) -> None:
        batch: Any = self.batch_box.itemData(index)
        self.proxy.set_batch(batch if isinstance(batch, str) else None)
        # One batch shown: its name is in the box, a column repeating it says nothing, and
        # ids without its prefix are short: the message column gets the room.
        one = self.proxy.batch is not None
        self.table.setColumnHidden(Column.BATCH, one)
        if one:
            self.table.resizeColumnToContents(Column.JOB)
            width = self.table.columnWidth(Column.JOB)
            self.table.setColumnWidth(Column.JOB, min(max(width, 80), _WIDTHS[Column.JOB]))
        else:
            self.table.setColumnWidth(Column.JOB, _WIDTHS[Column.JOB])
        self._snapshot_shown(self.model.snapshot)

    @Slot()
    def _selection_changed(self, *_: QItemSelection | QModelIndex | int) -> None:
        self.cancel_action.setEnabled(any(not job.is_finished for job in self.selected_jobs()))

    @Slot(object)
    def _snapshot_shown(self, snapshot: Snapshot) -> None:
        batches = snapshot.batch_ids()
        known = {self.batch_box.itemData(i) for i in range(1, self.batch_box.count())}
        for batch_id in batches:
            if batch_id not in known:
                self.batch_box.addItem(batch_id, batch_id)
        summary = snapshot.summary(self.proxy.batch)
        parts = [f"{summary.total} job" + ("" if summary.total == 1 else "s")]
        parts += [f"{summary.counts[s]} {s.value}" for s in BatchStatus if summary.counts[s]]
        self.summary_label.setText(" · ".join(parts))
        # The bar and its percentage: the completed share ("100%" only when all completed).
        self.overall_label.setText(percent(summary.completed_share))
        self.overall_label.setToolTip(f"{done_text(summary)}, {summary.completed} completed")
        self.overall.setValue(floor_share(summary.completed_share, 1000))
        self._selection_changed()

    def _say(self, text: str, *, error: bool = False) -> None:
        colour = STATUS_COLOURS[BatchStatus.FAILED] if error else "palette(text)"
        self.status_label.setStyleSheet(f"color: {colour}")
        self.status_label.setText(text)

    # -- life cycle ------------------------------------------------------------------------
    def closeEvent(self, event: QCloseEvent) -> None:
        self.release()
        super().closeEvent(event)

    def close(self) -> bool:
        """Close the window and release the subscription, the cache (if owned) and the store."""
        closed = super().close()
        self.release()
        return closed

    def release(self) -> None:
        """Release what the monitor owns without closing the window. May be called twice."""
        if self._released:
            return
        self._released = True
        self.model.close()
        if self._own_cache:
            self._cache.close()
        if self._store is not None:
            self._store.close()
