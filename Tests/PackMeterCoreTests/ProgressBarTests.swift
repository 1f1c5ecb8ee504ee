import PackMeterRuntime
import Testing

/// The progress line of `demo` and `replay`: redrawn in place on a terminal, whole lines
/// a few seconds apart anywhere else.
@Suite("Progress line")
struct ProgressBarTests {
    final class Output {
        var text = ""
    }

    @Test func notOnATerminal_eachUpdateIsAWholeLine_atMostEveryFiveSeconds() {
        let out = Output()
        var progress = ProgressBar(toTerminal: false) { out.text += $0 }
        progress.draw("a", now: 100)
        progress.draw("b", now: 104.9)  // too soon
        progress.draw("c", now: 105)
        progress.draw("d", now: 105.1, force: true)  // the last one is always shown
        progress.finish()
        #expect(out.text == "a\nc\nd\n")
        #expect(!out.text.contains("\r"))
    }

    @Test func onATerminal_theLineIsRedrawnInPlace_andFinishEndsItOnce() {
        let out = Output()
        var progress = ProgressBar(toTerminal: true) { out.text += $0 }
        progress.draw("a", now: 100)
        progress.draw("b", now: 100.1)  // too soon
        progress.draw("c", now: 100.2)
        progress.finish()
        progress.finish()
        #expect(out.text == "\ra \rc \n")
    }

    @Test func theBar_fillsInProportion_andStaysInItsWidth() {
        #expect(ProgressBar.bar(done: 0, total: 10, width: 10) == "[..........]")
        #expect(ProgressBar.bar(done: 5, total: 10, width: 10) == "[#####.....]")
        #expect(ProgressBar.bar(done: 10, total: 10, width: 10) == "[##########]")
        #expect(ProgressBar.bar(done: 12, total: 10, width: 10) == "[##########]")
        #expect(ProgressBar.bar(done: 0, total: 0, width: 4) == "[####]", "nothing to do is done")
        #expect(ProgressBar.bar(done: 1, total: 3).count == 32)
    }
}
