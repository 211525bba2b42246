/*
 * ConfigIndexSteps - the one build step of Apicurio's config-index extension.
 *
 * Apicurio Registry reads "dynamic" settings (changeable at run time through
 * its admin API) from a DynamicConfigPropertyList bean.  The list is made at
 * build time from every injection point carrying both @ConfigProperty and
 * @Dynamic (fields of type Supplier<T>), then handed to the runtime half's
 * DynamicPropertiesInfoRecorder, which wraps it in the bean at start-up.
 */
package pipeline.registry.configindex;

import java.util.ArrayList;
import java.util.List;

import org.jboss.jandex.AnnotationInstance;
import org.jboss.jandex.AnnotationValue;
import org.jboss.jandex.DotName;
import org.jboss.jandex.Type;

import apicurio.common.app.components.config.index.DynamicPropertiesInfoRecorder;
import io.apicurio.common.apps.config.DynamicConfigPropertyDef;
import io.apicurio.common.apps.config.DynamicConfigPropertyList;
import io.quarkus.arc.deployment.BeanDiscoveryFinishedBuildItem;
import io.quarkus.arc.deployment.SyntheticBeanBuildItem;
import io.quarkus.arc.processor.InjectionPointInfo;
import io.quarkus.deployment.annotations.BuildProducer;
import io.quarkus.deployment.annotations.BuildStep;
import io.quarkus.deployment.annotations.ExecutionTime;
import io.quarkus.deployment.annotations.Record;
import io.quarkus.deployment.builditem.FeatureBuildItem;
import io.quarkus.runtime.RuntimeValue;

public class ConfigIndexSteps {

    private static final DotName CONFIG_PROPERTY =
        DotName.createSimple("org.eclipse.microprofile.config.inject.ConfigProperty");
    private static final DotName DYNAMIC =
        DotName.createSimple("io.apicurio.common.apps.config.Dynamic");

    @BuildStep
    FeatureBuildItem feature() {
        return new FeatureBuildItem("config-index");
    }

    @BuildStep
    @Record(ExecutionTime.RUNTIME_INIT)
    void dynamicProperties(DynamicPropertiesInfoRecorder recorder,
                           BeanDiscoveryFinishedBuildItem discovery,
                           BuildProducer<SyntheticBeanBuildItem> beans) throws ClassNotFoundException {
        List<DynamicConfigPropertyDef> defs = new ArrayList<>();
        for (InjectionPointInfo ip : discovery.getInjectionPoints()) {
            AnnotationInstance config = ip.getRequiredQualifier(CONFIG_PROPERTY);
            AnnotationInstance dynamic = ip.getRequiredQualifier(DYNAMIC);
            if (config == null || dynamic == null)
                continue;
            /* Supplier<T>: the property's type is T. */
            Type t = ip.getRequiredType();
            Type valueType = t.kind() == Type.Kind.PARAMETERIZED_TYPE
                ? t.asParameterizedType().arguments().get(0) : t;
            Class<?> cls = Class.forName(valueType.name().toString(), false,
                                         Thread.currentThread().getContextClassLoader());
            DynamicConfigPropertyDef def = new DynamicConfigPropertyDef(
                config.value("name").asString(), cls, stringValue(config, "defaultValue"));
            def.setLabel(stringValue(dynamic, "label"));
            def.setDescription(stringValue(dynamic, "description"));
            AnnotationValue requires = dynamic.value("requires");
            if (requires != null)
                def.setRequires(requires.asStringArray());
            defs.add(def);
        }
        RuntimeValue<DynamicConfigPropertyList> list = recorder.initializePropertiesInfo(defs);
        beans.produce(SyntheticBeanBuildItem.configure(DynamicConfigPropertyList.class)
                      .runtimeValue(list)
                      .unremovable()
                      .setRuntimeInit()
                      .done());
    }

    private static String stringValue(AnnotationInstance ai, String name) {
        AnnotationValue v = ai.value(name);
        return v == null ? null : v.asString();
    }
}
