// memlog's library: record a process tree's memory and connections, parse and summarize the log, plot it.
// The CLI (cli.ts) and the c1m harness both use only what this module exports.

export { type LogRow, COLUMNS, type ColumnName, headerLine, commentLine, encodeRow, encodeRows, parseLog, isRich, formatDate, zoneAbbreviation, LogParseError } from './row.js';
export { startRecorder, resolvePgrep, RecorderError, RECORDER_LIMITS, type RecorderOptions, type RecorderHandle, type RecorderEnd } from './recorder.js';
export { summarize, formatSummary, PLATEAU_SHARE, IDLE_SHARE, GROWTH_WARN_SHARE, type Summary, type SeriesSummary, type MemoryColumn } from './summary.js';
export { plotLog, renderSvg, svgToPng, asciiPlot, chartSpec, downsample, PLOT_LIMITS, type PlotOptions, type PlotResult } from './plot.js';
export { TcpTableScanner, InodeTable, SocketOwnership, type ScanCounts, type OwnershipCounts } from './tcptable.js';
export { processTree, readStat, readPssKb, readTcpMemKb } from './proc.js';
