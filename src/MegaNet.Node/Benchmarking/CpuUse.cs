using System.Globalization;

namespace MegaNet.Node.Benchmarking;

/// <summary>
/// CPU time taken by this process and, on Linux, by the whole machine (<c>/proc/stat</c>) at one moment, so that a
/// load run can say how busy its cores were: on a machine the node shares with the load client, a node that is not
/// CPU bound (idle cores) and one that is (none) call for different readings of the same rate.
/// </summary>
/// <param name="Process">This process's CPU time (user and kernel).</param>
/// <param name="MachineBusy">Ticks the machine's cores spent busy (user, nice, system, irq, softirq), or −1 where
/// that is not known (not Linux, or <c>/proc/stat</c> unreadable).</param>
/// <param name="MachineTotal">Ticks in all, idle, I/O wait and steal included (−1 where unknown).</param>
/// <param name="MachineCores">The cores <c>/proc/stat</c> counts (in a container, the host's; 0 where unknown).</param>
internal readonly record struct CpuUse(TimeSpan Process, long MachineBusy, long MachineTotal, int MachineCores = 0)
{
    /// <summary>Now.</summary>
    public static CpuUse Now()
    {
        TimeSpan process = Environment.CpuUsage.TotalTime;
        if (OperatingSystem.IsLinux())
        {
            try
            {
                using var reader = new StreamReader("/proc/stat");
                if (ParseProcStat(reader.ReadLine()) is { } machine)
                {
                    // One "cpuN" line per core follows the total.
                    int cores = 0;
                    while (reader.ReadLine() is { } line && line.StartsWith("cpu", StringComparison.Ordinal))
                    {
                        cores++;
                    }

                    if (cores > 0)
                    {
                        return new CpuUse(process, machine.Busy, machine.Total, cores);
                    }
                }
            }
            catch (IOException)
            {
            }
            catch (UnauthorizedAccessException)
            {
            }
        }

        return new CpuUse(process, -1, -1);
    }

    /// <summary>Busy and total ticks from <c>/proc/stat</c>'s first line (<c>cpu  user nice system idle iowait irq
    /// softirq steal guest guest_nice</c>; guest time is already in user and nice), or null when it is not one.</summary>
    internal static (long Busy, long Total)? ParseProcStat(string? line)
    {
        if (line is null || !line.StartsWith("cpu ", StringComparison.Ordinal))
        {
            return null;
        }

        string[] fields = line[4..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
        if (fields.Length < 4)
        {
            return null;
        }

        var ticks = new long[Math.Min(fields.Length, 8)];
        for (int i = 0; i < ticks.Length; i++)
        {
            if (!long.TryParse(fields[i], NumberStyles.None, CultureInfo.InvariantCulture, out ticks[i]))
            {
                return null;
            }
        }

        // user, nice, system, irq and softirq are work; idle, iowait and steal (a hypervisor's other guests) are not.
        long busy = ticks[0] + ticks[1] + ticks[2] + (ticks.Length > 5 ? ticks[5] : 0) + (ticks.Length > 6 ? ticks[6] : 0);
        return (busy, ticks.Sum());
    }

    /// <summary>What was used between <paramref name="start"/> and <paramref name="end"/>, <paramref name="seconds"/> apart.</summary>
    public static CpuSpent Between(CpuUse start, CpuUse end, double seconds)
    {
        double processCores = seconds > 0 ? (end.Process - start.Process).TotalSeconds / seconds : double.NaN;
        double machineCores = double.NaN;
        long total = end.MachineTotal - start.MachineTotal;
        if (start.MachineTotal >= 0 && end.MachineTotal >= 0 && total > 0 && end.MachineCores > 0)
        {
            machineCores = end.MachineCores * (double)(end.MachineBusy - start.MachineBusy) / total;
        }

        return new CpuSpent(processCores, machineCores, end.MachineCores);
    }
}

/// <summary>Cores busy on average over a phase: this process's and the whole machine's (NaN where unknown), of the
/// machine's <paramref name="LogicalCores"/> (0 where unknown).</summary>
public readonly record struct CpuSpent(double ProcessCores, double MachineCores, int LogicalCores);
